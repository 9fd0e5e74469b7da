"""One module per pipeline step; each exposes main(argv) -> int and parses its own options."""
