"""The systems under test: beatd itself and its peers (Celery beat, APScheduler 3, raw pika)."""
