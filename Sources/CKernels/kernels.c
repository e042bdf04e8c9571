#include "dm_kernels.h"
