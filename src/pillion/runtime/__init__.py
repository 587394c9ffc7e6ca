"""The Runtime and its helpers: ordered start, drain and stop of everything Pillion runs."""
