"""Stage 2, a record's fate: decode and validate (triage), the facts about it (attempts on record,
images stored under its id), and the one decision (decision.py) that says what becomes of it."""
