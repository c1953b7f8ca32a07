from nvreload.entry import main

main()
