"""Operations on the state directory: locks, backup and restore, cleanup."""
