"""What people look at: figures (the paper's figures, with matplotlib), report (one self-contained
HTML report that renders what the floors below computed), spatial (tile-level maps over a slide).
"""
