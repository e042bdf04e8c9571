import DropModelCLI

DropModelCommand.main()
