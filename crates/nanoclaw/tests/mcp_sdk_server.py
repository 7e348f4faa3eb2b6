# An MCP server built with the official Python SDK (mcp 2.x, MCPServer), for the MCP tests:
# over stdio (run inside a sandbox), or over streamable HTTP (a remote server on loopback).
#   python mcp_sdk_server.py stdio MARKER_DIR
#   python mcp_sdk_server.py http PORT MARKER_DIR EXPECTED_AUTHORIZATION
# Tools: echo, slow (records its cancellation in MARKER_DIR), grow (adds a tool and says its
# list changed), crash, where (names MARKER_DIR), deaf (stops reading: blocks its loop). Over
# HTTP every request must carry EXPECTED_AUTHORIZATION (the proxy injects it), else 401; what
# arrived is recorded in MARKER_DIR/authorizations.
import os
import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer

mode = sys.argv[1]
marker_dir = sys.argv[3] if mode == "http" else sys.argv[2]
server = MCPServer("sdk-test")


def mark(name, text):
    with open(os.path.join(marker_dir, name), "a") as f:
        f.write(text + "\n")


@server.tool()
def echo(text: str) -> str:
    """Says the text back."""
    return "echo: " + text


@server.tool()
async def slow(seconds: float) -> str:
    """Answers after a while."""
    mark("slow", "started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        mark("slow", "cancelled")
        raise
    mark("slow", "finished")
    return "slept"


def added() -> str:
    """A tool that was not there at first."""
    return "new"


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds a tool."""
    server.add_tool(added, name="added")
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool()
def crash() -> str:
    """Dies."""
    os._exit(3)


@server.tool()
def where() -> str:
    """Says which marker directory it was started with."""
    return "marker dir: " + marker_dir


@server.tool()
async def deaf() -> str:
    """Stops reading anything: blocks its own event loop."""
    mark("deaf", "started")
    time.sleep(3600)
    return "never"


if mode == "stdio":
    server.run("stdio")
else:
    import uvicorn
    from starlette.responses import PlainTextResponse

    port, expected = int(sys.argv[2]), sys.argv[4]
    app = server.streamable_http_app(host="127.0.0.1")

    async def checked(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            got = headers.get(b"authorization", b"").decode("latin-1")
            mark("authorizations", "expected" if got == expected else "other: " + got)
            if got != expected:
                await PlainTextResponse("who are you?", status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    uvicorn.run(checked, host="127.0.0.1", port=port, log_level="warning")
