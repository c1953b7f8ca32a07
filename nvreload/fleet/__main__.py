from nvreload.fleet.cli import run

run()
