"""Parts of tests/test_cel_differential.py: the expression grammar, and cel-cpp's departures from cel-go."""
