"""Stage 4, outcomes out: encoding and storing images, looking them up again, the one publish
path (answers.py), acknowledgement (publish, then commit), and progress events."""
