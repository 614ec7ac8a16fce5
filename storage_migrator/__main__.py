"""``python -m storage_migrator`` is the ``storage-migrate`` command."""
from .cli import main

main()
