from nvreload.cli import main

main()
