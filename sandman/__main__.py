from sandman.cli import entry

entry()
