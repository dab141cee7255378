"""Alembic migrations of the voice library (``env.py``, ``versions/``); run by ``VoiceStore.open()``."""
