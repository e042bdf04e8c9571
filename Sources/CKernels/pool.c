// A small persistent thread pool for dm_parallel_for (see dm_kernels.h).
//
// Why not DispatchQueue.concurrentPerform: on this kind of machine a sleeping GCD worker takes
// about 20 µs to start and the whole call costs about 40 µs more than the work, 4-5 % of a
// 1 ms training product. Workers here spin for a short while after each job (training issues
// products back to back), then sleep on a condition variable.
//
// Only moves work between threads; no floating-point arithmetic here.
#pragma STDC FP_CONTRACT OFF

#include "dm_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 63
#define SPIN_NS 200000L // how long an idle worker spins before it sleeps
#define WAIT_SPIN_NS 100000L // how long the caller spins for the workers' items before it sleeps

static struct {
    pthread_mutex_t busy;        // one job at a time; other callers run their job inline
    pthread_mutex_t grow;        // serializes starting workers
    pthread_mutex_t sleep_lock;  // with sleep_cond: idle workers sleep here
    pthread_cond_t sleep_cond;
    pthread_mutex_t done_lock;   // with done_cond: the caller sleeps here for the workers' items
    pthread_cond_t done_cond;
    atomic_int waiting;          // the caller is (about to be) asleep on done_cond
    atomic_long gen;             // odd: a job is being set up; even: job `gen` is published
    atomic_int active;           // workers between joining a job and leaving it
    atomic_int sleepers;         // workers waiting on sleep_cond
    atomic_int workers;          // workers started
    // The current job (written only while gen is odd and active == 0).
    void (*fn)(void *, long);
    void *ctx;
    long count;
    atomic_long next;            // next index to hand out
    atomic_long done;            // indices finished
} P = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .grow = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .sleep_cond = PTHREAD_COND_INITIALIZER,
    .done_lock = PTHREAD_MUTEX_INITIALIZER,
    .done_cond = PTHREAD_COND_INITIALIZER,
};

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

// Waits politely: spin, then yield the core now and then (the thread we wait for may need it).
// Only for the short wait for stragglers of the previous job; the wait for a job's items sleeps.
static void relax(long *spins) {
    if (++*spins < 4096) CPU_RELAX();
    else sched_yield();
}

static int published(long g, long seen) { return g != seen && (g & 1) == 0; }

static void *worker_main(void *unused) {
    (void)unused;
    long seen = atomic_load(&P.gen);
    seen &= ~1L; // if a job is being set up right now, wait for it
    for (;;) {
        // Wait for a new published job: spin first, then sleep.
        long g = atomic_load(&P.gen);
        if (!published(g, seen)) {
            const long deadline = now_ns() + SPIN_NS;
            for (int i = 0; !published(g = atomic_load(&P.gen), seen); ++i) {
                CPU_RELAX();
                if ((i & 255) == 255 && now_ns() > deadline) break;
            }
        }
        if (!published(g, seen)) {
            pthread_mutex_lock(&P.sleep_lock);
            atomic_fetch_add(&P.sleepers, 1);
            while (!published(g = atomic_load(&P.gen), seen)) pthread_cond_wait(&P.sleep_cond, &P.sleep_lock);
            atomic_fetch_sub(&P.sleepers, 1);
            pthread_mutex_unlock(&P.sleep_lock);
        }
        seen = g;
        // Join; the job's fields are valid only if gen is still g after joining (the setter
        // makes gen odd before it waits for active == 0 and rewrites them).
        atomic_fetch_add(&P.active, 1);
        if (atomic_load(&P.gen) == g) {
            long i;
            while ((i = atomic_fetch_add(&P.next, 1)) < P.count) {
                P.fn(P.ctx, i);
                atomic_fetch_add(&P.done, 1);
                // The caller may have gone to sleep waiting for this item (seq_cst: it sets
                // `waiting` before it reads `done`, so one of the two sees the other).
                if (atomic_load(&P.waiting)) {
                    pthread_mutex_lock(&P.done_lock);
                    pthread_cond_signal(&P.done_cond);
                    pthread_mutex_unlock(&P.done_lock);
                }
            }
        }
        atomic_fetch_sub(&P.active, 1);
    }
    return NULL;
}

static void ensure_workers(int wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    if (atomic_load(&P.workers) >= wanted) return;
    pthread_mutex_lock(&P.grow);
    while (atomic_load(&P.workers) < wanted) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&t, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        atomic_fetch_add(&P.workers, 1);
    }
    pthread_mutex_unlock(&P.grow);
}

void dm_parallel_for(long count, void (*fn)(void *ctx, long i), void *ctx) {
    if (count <= 0) return;
    if (count == 1 || pthread_mutex_trylock(&P.busy) != 0) {
        // One item, or the pool is in use (another caller, or a nested call): run inline.
        for (long i = 0; i < count; ++i) fn(ctx, i);
        return;
    }
    ensure_workers((int)(count - 1 < MAX_WORKERS ? count - 1 : MAX_WORKERS));
    if (atomic_load(&P.workers) == 0) {
        pthread_mutex_unlock(&P.busy);
        for (long i = 0; i < count; ++i) fn(ctx, i);
        return;
    }
    // Set up: gen odd, then wait for stragglers of the previous job to leave.
    const long g = atomic_load(&P.gen) + 1; // odd
    atomic_store(&P.gen, g);
    long spins = 0;
    while (atomic_load(&P.active) != 0) relax(&spins);
    P.fn = fn;
    P.ctx = ctx;
    P.count = count;
    atomic_store(&P.next, 0);
    atomic_store(&P.done, 0);
    atomic_store(&P.gen, g + 1); // publish
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.sleep_lock);
        pthread_cond_broadcast(&P.sleep_cond);
        pthread_mutex_unlock(&P.sleep_lock);
    }
    // Work alongside the workers, then wait for the items they took.
    long i;
    while ((i = atomic_fetch_add(&P.next, 1)) < count) {
        fn(ctx, i);
        atomic_fetch_add(&P.done, 1);
    }
    // The workers' items usually end within microseconds: spin for them, then sleep until the
    // last one signals. Never sched_yield here: on a machine running anything else (even at
    // nice 19) a yield hands the core to that program for the rest of a time slice: beside
    // five nice-19 fuzzing processes, 2-thread training (the benchmark's MLP) ran at a median of
    // 15,300 examples/s with the yield and 19,100 with this wait (10 alternating runs each).
    long deadline = 0;
    for (long n = 0; atomic_load(&P.done) < count; ++n) {
        CPU_RELAX();
        if ((n & 255) != 255) continue;
        const long t = now_ns();
        if (deadline == 0) deadline = t + WAIT_SPIN_NS;
        else if (t > deadline) break;
    }
    if (atomic_load(&P.done) < count) {
        pthread_mutex_lock(&P.done_lock);
        atomic_store(&P.waiting, 1);
        while (atomic_load(&P.done) < count) pthread_cond_wait(&P.done_cond, &P.done_lock);
        atomic_store(&P.waiting, 0);
        pthread_mutex_unlock(&P.done_lock);
    }
    pthread_mutex_unlock(&P.busy);
}
