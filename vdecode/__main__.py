"""``python -m vdecode``."""
from vdecode.cli import console_main

console_main()
