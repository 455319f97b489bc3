"""Writing files so that nothing a user has is lost: atomic writes, directory locks, and the one
rule every output path a user names goes through.

Open `outputs.py` first (what may be written where); `atomic.py` and `lock.py` are what it stands on.
"""
