"""What every stage shares: params, paths, atomic writes, errors, progress, resources and tracking."""
