"""``python -m vdecode``."""
from vdecode.entry import console_main

console_main()
