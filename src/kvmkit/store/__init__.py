"""kvmkit's database: users, groups, VM grants, API tokens, tasks with their step journal, audit.

SQLAlchemy 2 models (models.py), engine/session set-up and programmatic Alembic upgrades (db.py).
libvirt stays the source of truth for what exists; nothing here copies VM state.
"""
