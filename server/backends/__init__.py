"""The three ways a program is differentiated: the engine under test, JAX and sympy (plus finite
differences). Each lowers every op of the table; a test fails when one lacks an op."""
