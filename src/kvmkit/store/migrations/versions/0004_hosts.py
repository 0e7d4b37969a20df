"""hosts: the inventory of libvirt hosts (name, URI, ssh key, maintenance, memory cap, vCPU overcommit)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('ssh_key', sa.String(length=1024), nullable=True),
    sa.Column('maintenance', sa.Boolean(), nullable=False),
    sa.Column('max_memory_mib', sa.Integer(), nullable=True),
    sa.Column('cpu_overcommit', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('hosts')
