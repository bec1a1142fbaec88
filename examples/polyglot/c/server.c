/* The C service: a static HTTP server answering every GET with one line of JSON. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    const char *port = getenv("PORT");
    struct sockaddr_in addr = {0};
    int one = 1, server = socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0) return 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((unsigned short)atoi(port ? port : "8002"));
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(server, 16) < 0) {
        perror("listen");
        return 1;
    }
    for (;;) {
        char request[1024], response[256];
        const char *body = "{\"service\": \"c\"}\n";
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        /* One read is enough for a GET; the request's content does not change the answer. */
        if (read(client, request, sizeof request) > 0) {
            int n = snprintf(response, sizeof response,
                             "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             strlen(body), body);
            if (write(client, response, (size_t)n) < 0) perror("write");
        }
        close(client);
    }
}
