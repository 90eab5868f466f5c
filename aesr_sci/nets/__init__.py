"""The autoencoder family of super-resolution networks and its registry."""
