"""The tiny ladder: the recipe of its rungs, their builder, the knowledge probe, and their
place in the store."""
