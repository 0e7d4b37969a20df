"""several servers on one database: servers (heartbeats), task_locks (one task per object, for every
server), tasks.owner (the server running a task), one journal row per task and step number

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('servers',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('proc_key', sa.String(length=128), nullable=True),
    sa.Column('version', sa.String(length=32), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reaped_by', sa.String(length=36), nullable=True),
    sa.Column('reaped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_servers_state'), 'servers', ['state'], unique=False)
    op.create_table('task_locks',
    sa.Column('target', sa.String(length=128), nullable=False),
    sa.Column('holder', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('server', sa.String(length=36), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('target')
    )
    op.create_index(op.f('ix_task_locks_holder'), 'task_locks', ['holder'], unique=False)
    op.create_index(op.f('ix_task_locks_server'), 'task_locks', ['server'], unique=False)
    # native ALTERs only (no batch table copy on SQLite: copying ``tasks`` would cascade-delete its journal)
    op.add_column('tasks', sa.Column('owner', sa.String(length=36), nullable=True))
    op.create_index(op.f('ix_tasks_owner'), 'tasks', ['owner'], unique=False)
    op.create_index(op.f('ix_tasks_state'), 'tasks', ['state'], unique=False)
    op.create_index('uq_task_steps_task_seq', 'task_steps', ['task_id', 'seq'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_task_steps_task_seq', table_name='task_steps')
    op.drop_index(op.f('ix_tasks_state'), table_name='tasks')
    op.drop_index(op.f('ix_tasks_owner'), table_name='tasks')
    op.drop_column('tasks', 'owner')  # ALTER TABLE ... DROP COLUMN: SQLite 3.35 and later do it in place
    op.drop_index(op.f('ix_task_locks_server'), table_name='task_locks')
    op.drop_index(op.f('ix_task_locks_holder'), table_name='task_locks')
    op.drop_table('task_locks')
    op.drop_index(op.f('ix_servers_state'), table_name='servers')
    op.drop_table('servers')
