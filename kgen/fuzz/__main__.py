"""`python -m kgen.fuzz`: see kgen/fuzz/cli.py."""
from kgen.fuzz.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
