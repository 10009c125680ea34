"""``python -m vdecode``."""
from vdecode.cli import main

main()
