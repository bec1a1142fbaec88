/* A tiny static "service": reports its configuration and serves one page to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *greeting = getenv("GREETING");
    char line[256];
    FILE *page = fopen("index.html", "r");
    printf("%s from the pyimg example (uid %d)\n", greeting ? greeting : "hello", (int)getuid());
    printf("PATH=%s\n", getenv("PATH") ? getenv("PATH") : "");
    if (page && fgets(line, sizeof line, page)) {
        printf("page: %s", line);
    }
    for (int i = 1; i < argc; i++) {
        printf("arg: %s\n", argv[i]);
    }
    return page ? 0 : 1;
}
