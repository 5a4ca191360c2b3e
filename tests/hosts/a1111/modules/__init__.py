# Stand-in package for A1111's `modules` (see ../README.md). Mirrors v1.10.1 @ 82a973c0.
