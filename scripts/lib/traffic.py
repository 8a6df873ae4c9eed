#!/usr/bin/env python3
"""Order traffic for scripts/cluster-container-test, with the standard library only.

  traffic.py run NODES SELLER_TOKEN STOP_FILE LOG
      Puts tickets on sale through the first node, signs up buyers, then orders one ticket after
      another through the nodes in turn until STOP_FILE exists. Every order acknowledged with a
      201 goes into LOG as a JSON line {"order": id, "token": buyer token, "node": url}; a 503
      (a shard between owners) or a refused connection (a stopped node) is counted, not fatal.
  traffic.py check NODES LOG
      Reads every acknowledged order back through each node: each must exist (200) with the same
      ticket. Exits 1 naming the first that does not.

NODES is a comma-separated list of base URLs.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


def call(method, url, token=None, body=None):
    """Returns (status, JSON body or None, headers); status 0 when the node did not answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None), response.headers
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return error.code, parsed, error.headers
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None, {}


def run(nodes, seller_token, stop_file, log_path):
    first = nodes[0]
    tickets = []
    for index in range(40):
        status, body, _ = call("POST", first + "/api/tickets", seller_token,
                               {"title": "Traffic seat %d" % index, "price": "15.00"})
        if status != 201:
            sys.exit("traffic: creating a ticket answered %s: %s" % (status, body))
        tickets.append(body["id"])
    buyers = []
    for _ in range(8):
        email = "traffic-%s@example.com" % uuid.uuid4().hex[:12]
        status, body, headers = call("POST", first + "/api/users/signup", None,
                                     {"email": email, "password": "secret1"})
        if status != 201:
            sys.exit("traffic: signup answered %s: %s" % (status, body))
        buyers.append(headers["x-auth-token"])
    counts = {"201": 0, "503": 0, "unanswered": 0, "other": 0}
    attempt = 0
    with open(log_path, "a", encoding="utf-8") as log:
        while not os.path.exists(stop_file):
            ticket = tickets[attempt % len(tickets)]
            buyer = buyers[attempt % len(buyers)]
            node = nodes[attempt % len(nodes)]
            attempt += 1
            status, body, _ = call("POST", node + "/api/orders", buyer, {"ticketId": ticket})
            if status == 201:
                counts["201"] += 1
                log.write(json.dumps({"order": body["id"], "ticket": ticket, "token": buyer,
                                      "node": node}) + "\n")
                log.flush()
                # Free the ticket again so the traffic never runs out of tickets.
                call("DELETE", node + "/api/orders/" + body["id"], buyer)
            elif status == 503:
                counts["503"] += 1
            elif status == 0:
                counts["unanswered"] += 1
            else:
                counts["other"] += 1
            time.sleep(0.05)
    print("traffic: %d attempts: %s" % (attempt, json.dumps(counts)))


def check(nodes, log_path):
    with open(log_path, encoding="utf-8") as log:
        acknowledged = [json.loads(line) for line in log if line.strip()]
    if not acknowledged:
        sys.exit("traffic: no order was acknowledged")
    for entry in acknowledged:
        for node in nodes:
            status, body, _ = call("GET", node + "/api/orders/" + entry["order"], entry["token"])
            if status != 200 or body.get("ticket", {}).get("id") != entry["ticket"]:
                sys.exit("traffic: order %s acknowledged by %s reads %s through %s: %s"
                         % (entry["order"], entry["node"], status, node, body))
    print("traffic: all %d acknowledged orders exist, read through %d nodes"
          % (len(acknowledged), len(nodes)))


def main(argv):
    if len(argv) == 6 and argv[1] == "run":
        run(argv[2].split(","), argv[3], argv[4], argv[5])
    elif len(argv) == 4 and argv[1] == "check":
        check(argv[2].split(","), argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
