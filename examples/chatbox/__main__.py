"""``python -m examples.chatbox train --url URL``: train the recommender on the cluster."""

import sys

from examples.chatbox.train import main

if __name__ == "__main__":
    if sys.argv[1:2] != ["train"]:
        sys.exit("usage: python -m examples.chatbox train --url URL [--api-key KEY]")
    main(sys.argv[2:])
