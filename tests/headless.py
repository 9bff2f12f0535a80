"""A headless chromium driven over the DevTools protocol: open a page, run JavaScript in it, collect script errors."""

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One chromium process with one tab. `errors` collects uncaught exceptions and console.error lines."""

    def __init__(self, profile_dir):
        profile_dir.mkdir(parents=True, exist_ok=True)
        log = profile_dir / "chromium.log"
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=log.open("w"),
        )
        port = self._port(log)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(target for target in targets if target["type"] == "page")
        from websockets.sync.client import connect

        self.exit_stack = contextlib.ExitStack()
        self.socket = self.exit_stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def _port(self, log) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", log.read_text())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"chromium did not start: {log.read_text()[-2000:]}")

    def send(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        self.events.append(message)

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (the page's inline scripts have run by then). Through
        about:blank, so that a URL differing only in its #fragment loads the page again."""
        for target in ("about:blank", url):
            self.events.clear()
            self.send("Page.navigate", url=target)
            deadline = time.monotonic() + 60
            while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} did not load in 60 s")
                self._event(json.loads(self.socket.recv(timeout=60)))

    def js(self, expression: str):
        """The value of a JavaScript expression evaluated in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30) -> None:
        """Poll a JavaScript expression until it is true, through a navigation (when the page's context is gone
        for a moment, evaluating fails: that counts as not yet)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.js(expression):
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{expression} was not true within {timeout_s} s")

    def close(self) -> None:
        if hasattr(self, "exit_stack"):
            self.exit_stack.close()
        self.process.terminate()
        self.process.wait(timeout=30)
