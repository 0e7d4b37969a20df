"""metrics history: series, points (raw and 5-minute roll-ups), sampling leases

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metric_series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'name', 'host')
    )
    op.create_table('metric_points',
    sa.Column('series_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.SmallInteger(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('cpu', sa.Integer(), nullable=True),
    sa.Column('cpu_max', sa.Integer(), nullable=True),
    sa.Column('mem_used_kib', sa.BigInteger(), nullable=True),
    sa.Column('mem_total_kib', sa.BigInteger(), nullable=True),
    sa.Column('disk_rd', sa.BigInteger(), nullable=True),
    sa.Column('disk_wr', sa.BigInteger(), nullable=True),
    sa.Column('net_rx', sa.BigInteger(), nullable=True),
    sa.Column('net_tx', sa.BigInteger(), nullable=True),
    sa.Column('ksm_saved_kib', sa.BigInteger(), nullable=True),
    sa.Column('vms_running', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['series_id'], ['metric_series.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_id', 'step', 'ts'),
    sqlite_with_rowid=False
    )
    op.create_table('metric_leases',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.Column('rolled_until', sa.BigInteger(), nullable=True),
    sa.Column('interval', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('host')
    )


def downgrade() -> None:
    op.drop_table('metric_leases')
    op.drop_table('metric_points')
    op.drop_table('metric_series')
