"""Access: users, tokens, groups, grants, login, audit."""
