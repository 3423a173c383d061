"""After palm: the monolith's dialog served through PUMA's three calls.

``python -m examples.chatbox.app`` starts Redis, the workers, the gateway and
Envoy: ``POST <edge>/agent/call`` is one turn, ``POST <edge>/listener/call``
with ``"mode": "poll"`` the queued messages. Dialog state lives in Redis, so
any gateway process and any worker serves any turn.
"""

import json

from examples.chatbox.dialog import dialogueCtrl, dialogueIdle, initResources
from palm.puma import puma_config, puma_service, puma_start

debug = False


def service1(data):
    response, userid, passiveLen, signal = dialogueCtrl(data)
    if signal != "listen":
        dialogueIdle(userid, debug)
    return json.dumps(dict(response=response, userid=userid, signal=signal, passiveLen=passiveLen))


puma_config({"puma_services": {"service1": "/agent", "service2": "/listener"}})
puma_service({"service1": service1, "service2": service1})

if __name__ == "__main__":
    initResources()
    puma_start()
