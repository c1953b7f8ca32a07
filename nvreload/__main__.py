try:
    from nvreload.entry import main
except KeyboardInterrupt:  # Ctrl-C while Python imports it: one line, as entry.main says it
    import sys

    sys.stderr.write("nvreload: interrupted before anything was changed\n")
    sys.exit(130)

main()
