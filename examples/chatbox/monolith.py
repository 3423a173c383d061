"""Before palm: PUMA's Listing 1, a threaded socket server around the dialog.

One JSON message a line in (``{"text", "mode", "id", "turn"}``), one JSON
reply a line out; dialog state in this process's memory. Run it with
``python -m examples.chatbox.monolith [debug]`` (port 13113, 13120 in debug).
"""

import json
import socket
import sys
import threading
import traceback

from examples.chatbox.dialog import dialogueCtrl, dialogueIdle, initResources

debug = False


def chatbox_socket():
    if debug:
        return 13120
    else:
        return 13113


class ThreadingServer:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))

    def listen(self):
        self.sock.listen(128)
        self.sock.settimeout(None)
        while True:
            client, address = self.sock.accept()
            client.settimeout(60)
            threading.Thread(target=self.listenToClient, args=(client, address)).start()

    def listenToClient(self, client, address):
        try:
            for data in client.makefile("rb"):
                try:
                    response, userid, passiveLen, signal = dialogueCtrl(data)
                    if signal != "listen":
                        dialogueIdle(userid, debug)
                    reply = dict(
                        response=response, userid=userid, signal=signal, passiveLen=passiveLen
                    )
                    client.sendall(json.dumps(reply).encode() + b"\n")
                except Exception:
                    traceback.print_exc()
        except OSError:
            pass
        finally:
            client.close()


if __name__ == "__main__":
    initResources()
    if "debug" in sys.argv:
        debug = True
        print(f"Running in debug mode (socket: {chatbox_socket()})")
    ThreadingServer("localhost", chatbox_socket()).listen()
