"""DVC stage entry points: the only code in agebench that reads and writes files."""
