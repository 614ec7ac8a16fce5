"""``python -m storage_migrator`` is the ``storage-migrate`` command."""
from storage_migrator.cli.main import console_script

console_script()
