"""The read model: pure parsers over a RootFS, one file per source."""
