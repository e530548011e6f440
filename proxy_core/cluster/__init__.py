"""A fleet of instances sharing one admin state through Redis (docs/cluster.md)."""
