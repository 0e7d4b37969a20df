"""access hardening: grants bound to the VM's UUID, single-use console tickets

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 21:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vm_grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vm_uuid', sa.String(length=36), nullable=True))

    op.create_table('console_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('vm_name', sa.String(length=64), nullable=False),
    sa.Column('vm_uuid', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('view_only', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ticket_hash')
    )
    with op.batch_alter_table('console_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_tickets_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_console_tickets_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('console_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_tickets_user_id'))
        batch_op.drop_index(batch_op.f('ix_console_tickets_expires_at'))
    op.drop_table('console_tickets')
    with op.batch_alter_table('vm_grants', schema=None) as batch_op:
        batch_op.drop_column('vm_uuid')
