# Two commands a newcomer needs: `make demo` and `make test`. Both create .venv when missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The demo keeps its own database, so it starts from nothing every time. Its servers listen on
# these ports: `make demo SMTP_PORT=2626 TRACKING_PORT=8126` runs a second demo beside another.
SMTP_PORT     ?= 2525
TRACKING_PORT ?= 8025
TRACKING_URL  := http://127.0.0.1:$(TRACKING_PORT)
DEMO   := COLUMNS=140 MAILER_DATABASE_URL=sqlite:///.mailer/demo.db $(BIN)/mailer
# The ports given to this make (command line or environment), kept in the command a refusal suggests.
DEMO_PORTS := $(foreach port,SMTP_PORT TRACKING_PORT,$(if $(filter command environment,$(origin $(port))),$(port)=$($(port))))
SINK_STOP := if [ -f .mailer/sink.pid ]; then kill $$(cat .mailer/sink.pid) 2>/dev/null; rm -f .mailer/sink.pid; fi
SERVE_STOP := if [ -f .mailer/serve.pid ]; then kill $$(cat .mailer/serve.pid) 2>/dev/null; rm -f .mailer/serve.pid; fi
BROWSER := Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36
# The pixel, first link (after the hidden honeypot) and unsubscribe URL of the first message
# the sink kept for Priya.
export PRIYA_URLS := import email, glob, re, email.policy as p; \
  f = [n for n in sorted(glob.glob(".mailer/sent/*.eml")) if b"Delivered-To: priya.nair@example.org" in open(n, "rb").read()][0]; \
  m = email.message_from_binary_file(open(f, "rb"), policy=p.default); h = m.get_body(("html",)).get_content(); \
  print(re.search(r"src=.(http://127.0.0.1:[0-9]+/o/[^\"]+)", h).group(1)); \
  print(re.findall(r"href=.(http://127.0.0.1:[0-9]+/c/[^\"]+)", h)[1]); \
  print(re.search(r"<(http[^>]+)>", m["List-Unsubscribe"]).group(1))

.PHONY: demo test test-future lock lint browser faketime spamassassin bench-import bench-render bench-send bench-scale clean bench-tools bench-tracking

# Installs go from requirements.lock (every package pinned, with hashes): a fresh machine gets the
# versions CI tested, not whatever was released last night. uv, itself pinned, installs them in
# seconds; `make lock` refreshes the lock after a change of pyproject.toml (or to take new releases).
UV_VERSION := 0.9.13
LOCK := requirements.lock
UV := $(BIN)/uv

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "mailer needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "python3 -m venv failed: installing Debian's python3-venv"; \
		apt-get install -y -q python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)

$(STAMP): $(UV) pyproject.toml $(LOCK)
	$(UV) pip install -q --python $(BIN)/python --require-hashes --compile-bytecode -r $(LOCK)
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	@touch $@

lock: $(UV)
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --upgrade -q -o $(LOCK)
	@echo "$(LOCK) refreshed: run make test before committing it"

# settings.toml's [smtp] port and [tracking] port and base_url, moved with the variables.
demo: export MAILER_SMTP__PORT := $(SMTP_PORT)
demo: export MAILER_TRACKING__PORT := $(TRACKING_PORT)
demo: export MAILER_TRACKING__BASE_URL := $(TRACKING_URL)
demo: $(STAMP)
	@$(SINK_STOP); $(SERVE_STOP)
	@$(BIN)/python -m mailer.free_ports --run "make demo $(DEMO_PORTS)" SMTP_PORT=$(SMTP_PORT) TRACKING_PORT=$(TRACKING_PORT)
	@rm -f .mailer/demo.db .mailer/demo.db-wal .mailer/demo.db-shm
	@echo; echo "== 1. Set up: the database (SQLite, in .mailer/), the secret key and the DKIM key"
	$(DEMO) init
	@echo; echo "== 2. Check settings, templates, list files, and render every message once"
	$(DEMO) check
	@echo; echo "== 2b. The engine starts (mailer run would keep ticking): sequences count joins from now"
	$(DEMO) tick
	@echo; echo "== 3. Import the newsletter list (double opt-in, with consent evidence)"
	$(DEMO) import lists/newsletter.csv --list newsletter
	@echo; echo "== 4. Import a landing-page export (Windows-1252, semicolons, two bad rows)"
	$(DEMO) import lists/leads.csv --list leads
	@echo; echo "== 5. Consent of a few contacts: confirmed, pending (no confirmation), none"
	$(DEMO) consent show sarah.mitchell@example.com
	$(DEMO) consent show ken.watanabe@example.com
	$(DEMO) consent show daniel.hughes@example.com
	@echo; echo "== 6. Sarah unsubscribes from everything: withdrawn and suppressed"
	$(DEMO) consent withdraw sarah.mitchell@example.com
	$(DEMO) consent show sarah.mitchell@example.com
	@echo; echo "== 7. Oliver asks to be forgotten (GDPR Art. 17)"
	$(DEMO) consent erase oliver.grant@example.com --yes
	$(DEMO) consent history oliver.grant@example.com
	@echo; echo "== 8. Importing both lists again re-subscribes neither of them"
	$(DEMO) import lists/newsletter.csv --list newsletter
	$(DEMO) import lists/leads.csv --list leads 2>/dev/null
	@echo; echo "== 9. The auditor verifies that no ledger entry was edited, inserted or deleted"
	$(DEMO) consent verify
	@echo; echo "== 10. Preview what Giulia (locale it) gets from the welcome sequence: headers"
	$(DEMO) preview welcome hello --contact giulia.rossi@example.it --out .mailer/giulia.eml
	@sed -n '1,/^Content-Type:/p' .mailer/giulia.eml | cut -c1-110
	@echo; echo "== 11. ... and its plain-text part, links tracked (open .mailer/giulia.html to see the HTML)"
	$(DEMO) preview welcome hello --contact giulia.rossi@example.it --html .mailer/giulia.html
	@$(BIN)/python -c "import email, email.policy as p; m = email.message_from_binary_file(open('.mailer/giulia.eml', 'rb'), policy=p.default); print(m.get_body(('plain',)).get_content()[:900])"
	@echo; echo "== 12. Segments: who viewed a product, who has ordered more than once, ..."
	$(DEMO) segment count repeat_buyers
	$(DEMO) segment show --where 'favourite_roast = "espresso" and consent "newsletter"'
	@echo; echo "== 13. The plan for the next two weeks: what the engine would queue, a dry run"
	$(DEMO) plan --horizon 14d
	@echo; echo "== 14. The shop reports that Priya left coffee in her cart (as POST /events would)"
	$(DEMO) event priya.nair@example.org cart_abandoned --prop value=24.50
	@echo; echo "== 15. Start mailer sink: a local SMTP server that keeps every message in .mailer/sent"
	@$(SINK_STOP)
	@rm -rf .mailer/sent
	@$(DEMO) sink --dir .mailer/sent --port $(SMTP_PORT) > .mailer/sink.log 2>&1 & echo $$! > .mailer/sink.pid
	@for i in $$(seq 50); do [ -s .mailer/sink.log ] && break; sleep 0.2; done; head -1 .mailer/sink.log
	@kill -0 $$(cat .mailer/sink.pid) 2>/dev/null || { rm -f .mailer/sink.pid; exit 1; }
	@echo; echo "== 16. Two weeks of hourly ticks with a moved clock: queue, then deliver (mailer run does this live)"
	$(DEMO) tick --until $$(date -u -d "+14 day" +%Y-%m-%dT%H:%MZ) || { $(SINK_STOP); exit 1; }
	@echo; echo "== 17. What Priya received, and when: the welcome series, and the cart reminder an hour after her cart"
	$(DEMO) outbox --contact priya.nair@example.org
	@echo; echo "== 18. Ken never confirmed his subscription: nothing was queued for him"
	$(DEMO) outbox --contact ken.watanabe@example.com
	@echo; echo "== 19. The sink kept each message as a file (open one in a mail program); its log:"
	@sed -n '2,9p' .mailer/sink.log; echo "   ... $$(ls .mailer/sent | wc -l) messages in .mailer/sent/"
	@$(SINK_STOP)
	@echo; echo "== 20. The tracking endpoint (mailer serve; mailer run serves it too): Priya opens her welcome message and clicks"
	@$(SERVE_STOP); $(DEMO) serve > .mailer/serve.log 2>&1 & echo $$! > .mailer/serve.pid
	@$(BIN)/python -c "$$PRIYA_URLS" > .mailer/urls.txt
	@for i in $$(seq 50); do curl -s -o /dev/null $(TRACKING_URL)/healthz && break; sleep 0.2; done
	@kill -0 $$(cat .mailer/serve.pid) 2>/dev/null || { cat .mailer/serve.log; rm -f .mailer/serve.pid; exit 1; }
	curl -s -o /dev/null -w "pixel: %{http_code} %{content_type} %{size_download} bytes\n" -A "$(BROWSER)" "$$(sed -n 1p .mailer/urls.txt)"
	curl -s -o /dev/null -w "click: %{http_code} -> %{redirect_url}\n" -A "$(BROWSER)" "$$(sed -n 2p .mailer/urls.txt)"
	curl -s -o /dev/null -w "forged click: %{http_code}\n" "$(TRACKING_URL)/c/1.bTE.forged-forged-forged-ab"
	@echo; echo "== 21. Her mail program's one-click unsubscribe (RFC 8058): a POST, written to the ledger before the answer"
	curl -s -w " (%{http_code})\n" -d "List-Unsubscribe=One-Click" "$$(sed -n 3p .mailer/urls.txt)"
	@$(SERVE_STOP); sleep 1
	$(DEMO) segment show --where 'clicked any within 1d'
	$(DEMO) consent history priya.nair@example.org
	@echo; echo "== 22. Hold a campaign's delivery, see every campaign's messages by status, let it go again"
	$(DEMO) campaign pause abandoned_cart --reason "new prices from Monday"
	$(DEMO) campaign list
	$(DEMO) campaign resume abandoned_cart

lint: $(STAMP)
	$(BIN)/ruff check mailer tests bench
	$(BIN)/mypy mailer

# The suite runs in TEST_JOBS processes (pytest-xdist): most tests wait on sockets, subprocesses
# and polling, not on the CPU, so more processes than cores still shortens the run.
TEST_JOBS ?= 4
test: lint browser spamassassin
	$(BIN)/pytest -q -n $(TEST_JOBS)

# The page tests drive a real browser: Debian's chromium, installed here when missing and we
# may (root); elsewhere those tests are skipped, saying why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { \
		echo "installing Debian's chromium for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }; \
	}; } || echo "chromium is not installed: the browser tests will be skipped"

# The content tests score every example message with SpamAssassin's local rules (`mailer check
# --spam`): Debian's spamassassin, installed here when missing and we may (root); elsewhere those
# tests are skipped, saying why. One run scores all messages (about 5 s, mostly loading rules).
spamassassin:
	@command -v spamassassin >/dev/null || { [ "$$(id -u)" = 0 ] && { \
		echo "installing Debian's spamassassin for the content tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends spamassassin >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends spamassassin >/dev/null; }; \
	}; } || echo "spamassassin is not installed: the spam tests will be skipped"

bench-import: $(STAMP)
	$(BIN)/python bench/import_bench.py

bench-render: $(STAMP)
	$(BIN)/python bench/render_bench.py

bench-send: $(STAMP) bench-tools
	$(BIN)/python bench/send_bench.py

bench-scale: $(STAMP) bench-tools
	$(BIN)/python bench/scale_bench.py

clean:
	rm -rf $(VENV) .mailer .pytest_cache .mypy_cache .ruff_cache lists/*.rejects.csv

# Postfix's standalone smtp-sink and smtp-source, the reference half of the send benchmark;
# the postfix daemon itself is never started. While apt runs, a policy-rc.d that answers 101
# forbids the package's scripts to start it (one already there is put aside and restored, whatever
# happens); `apt-get update` only when the install fails without it.
POLICY_RC := /usr/sbin/policy-rc.d
bench-tools:
	@if [ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ]; then \
		echo "smtp-sink and smtp-source are installed"; \
	else \
		set -e; \
		restore() { rm -f $(POLICY_RC); \
			if [ -e $(POLICY_RC).bench-tools ]; then mv $(POLICY_RC).bench-tools $(POLICY_RC); fi; }; \
		trap restore EXIT; trap 'exit 1' HUP INT TERM; \
		if [ -e $(POLICY_RC) ]; then mv $(POLICY_RC) $(POLICY_RC).bench-tools; fi; \
		printf '#!/bin/sh\nexit 101\n' > $(POLICY_RC); chmod 755 $(POLICY_RC); \
		echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; \
		export DEBIAN_FRONTEND=noninteractive; \
		echo "installing Debian's postfix for smtp-sink and smtp-source (the daemon is not started)"; \
		if ! apt-get install -y -q --no-install-recommends postfix >/dev/null 2>&1; then \
			apt-get update -q >/dev/null || exit 1; \
			apt-get install -y -q --no-install-recommends postfix >/dev/null || exit 1; \
		fi; \
		[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] || \
			{ echo "postfix is installed but smtp-sink or smtp-source is missing"; exit 1; }; \
	fi
	@if pgrep -x master >/dev/null; then \
		echo "a postfix master process runs: stopping it with postfix stop"; \
		postfix stop; sleep 1; \
		! pgrep -x master >/dev/null || { echo "postfix master still runs"; exit 1; }; \
	fi

# The tracking endpoint under wrk (Debian's package, installed when missing; `apt-get update`
# only when the install fails without it), against a bare ASGI app serving the same pixel.
bench-tracking: $(STAMP)
	@if [ -x /usr/bin/wrk ]; then \
		echo "wrk is installed"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		echo "installing Debian's wrk"; \
		if ! apt-get install -y -q wrk >/dev/null 2>&1; then \
			apt-get update -q >/dev/null || exit 1; \
			apt-get install -y -q wrk >/dev/null || exit 1; \
		fi; \
		[ -x /usr/bin/wrk ] || { echo "wrk is installed but /usr/bin/wrk is missing"; exit 1; }; \
	fi
	$(BIN)/python bench/tracking_bench.py

# The whole suite again with the wall clock moved FUTURE ahead (Debian's libfaketime, installed
# here when missing): a test that passes only near the day it was written fails here. Every
# subprocess a test starts (mailer run, render processes) inherits the moved clock.
# libfaketime moves the monotonic clock too, so a thread's timed wait (Event.wait(0.01)) lasts
# until something wakes it: tests poll with sleep. (Moving only the wall clock, with
# FAKETIME_DONT_FAKE_MONOTONIC=1, crashed the event loop threads of aiosmtpd here.)
# -m preloads libfaketimeMT, the thread-safe build: the plain one segfaulted in an aiosmtpd
# thread once in a CI run (its clock state is shared by threads without a lock).
# FAKETIME_CACHE_DURATION: libfaketime reads $$FAKETIME again (getenv) every 10 s by default, in
# whichever thread asks the time; a test setting os.environ (click's CliRunner) at that moment
# in the main thread segfaulted an aiosmtpd thread (glibc's getenv and setenv are not safe
# together). Read once per process, it never races.
FUTURE ?= +400d
test-future: $(STAMP) faketime browser spamassassin
	FAKETIME_CACHE_DURATION=1000000000 faketime -m -f '$(FUTURE)' \
		$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_JOBS)

faketime:
	@command -v faketime >/dev/null || { [ "$$(id -u)" = 0 ] && { \
		echo "installing Debian's faketime"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q faketime >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q faketime >/dev/null; }; \
	}; } || { echo "faketime is missing and cannot be installed here (not root)"; exit 1; }
