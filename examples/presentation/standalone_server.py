from palm.standalone import Server

class MyServer(Server):
    def foo(self, message):
        self.logger.warning('Got a message')
        return b'you sent me ' + message
    
server = MyServer('my_server', 'tcp://127.0.0.1:5555')
server.start()
