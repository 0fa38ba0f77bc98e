/* The engine thread's side of the workbench (DESIGN.md §3): a Lua session
 * over a run. It owns the Lua state that the REPL, on_step hooks and Lua
 * curriculum functions share, pops the UI's commands from the live state,
 * steps the run between them and publishes what the UI draws.
 *
 * Everything here runs on the engine thread (the one that calls
 * reed_session_run); the UI thread talks to it only through reed_live.
 *
 * commands.log (RUN_DIR/commands.log) records every REPL chunk the session
 * ran, with the step it ran at, so that reed_replay can rerun a steered run
 * and reproduce its metrics; its format is described in session.c. */
#ifndef REED_LUA_SESSION_H
#define REED_LUA_SESSION_H

#include "error.h"
#include "live.h"
#include "reed.h"

typedef struct reed_session reed_session;

/* A session over an opened run. live NULL: the session makes (and frees) a
 * private one. commands_log: the file to append executed chunks to (usually
 * RUN_DIR/commands.log), NULL for none. The session routes the run's log
 * messages to live_log and starts paused when the run has no steps left,
 * running otherwise. The run stays the caller's (close it after
 * reed_session_free). */
int reed_session_new(reed_session **out, reed_run *run, reed_live *live,
                     const char *commands_log, reed_error *err);
void reed_session_free(reed_session *s);

/* The engine thread's main loop: applies commands (at once while paused,
 * between steps while running), steps the run, publishes after every step,
 * runs on_step hooks, writes periodic samples and checkpoints, pauses on a
 * non-finite loss and at the end of the run. Returns 0 after quit() or
 * LIVE_CMD_QUIT, having saved a checkpoint (-1 if that save failed). */
int reed_session_run(reed_session *s);

/* Runs one REPL chunk now: auto-prints its results unless it ends with ';'
 * (`return <chunk>` is tried first), reports errors with a traceback.
 * *output (malloc'd, caller frees; output may be NULL) receives what print
 * and auto-print wrote, which also goes to live_log line by line. Returns 0,
 * or -1 when the chunk failed to compile or raised an error. */
int reed_session_exec(reed_session *s, const char *chunk, char **output);

/* Applies one UI command now (what reed_session_run does with each popped
 * command); takes ownership of cmd->text. */
void reed_session_apply(reed_session *s, live_cmd *cmd);

/* Runs one training step with everything that goes with it (history, status,
 * step budget, hooks, periodic outputs, the end-of-run pause). Returns 0, or
 * -1 when the step failed (the session is then paused and the message
 * logged). */
int reed_session_step(reed_session *s);

int reed_session_paused(const reed_session *s);
int reed_session_quit_requested(const reed_session *s);

/* Whether a REPL chunk is incomplete (its compile error ends in "<eof>"), so
 * the REPL should read another line. Uses a throwaway Lua state: safe on
 * the UI thread. */
int reed_lua_chunk_incomplete(const char *chunk);

/* Reruns a steered run: reads RUN_DIR/commands.log (and the config the run
 * started from: its "#config" record, else RUN_DIR/config.lua), opens a new
 * run in out_dir and steps it headless to the original's last step
 * (RUN_DIR/metrics.jsonl), running each logged chunk before the step it ran
 * at. The new metrics.jsonl equals the original's except imgs_per_s.
 * progress (may be NULL) receives the replay session's log lines. */
int reed_replay(const char *run_dir, const char *out_dir, reed_error *err);

#endif
