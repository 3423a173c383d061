"""chatbox: PUMA's dialog movie recommender, on palm.

The dialog core (:mod:`.catalog`, :mod:`.understand`, :mod:`.dialog`,
:mod:`.recommend`) is plain Python and numpy; :mod:`.store` keeps dialog state
in process memory (the monolith) or in Redis (palm). :mod:`.monolith` is the
threaded socket server of PUMA's Listing 1 and :mod:`.app` its port onto palm.
"""
