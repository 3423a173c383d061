"""Code that runs inside one interpreter (palm's, the peers' or pylm's) and prints rows."""
