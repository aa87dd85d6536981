// Debian's Chromium for the real-browser tests (test/browser.test.ts, test/app-host.test.ts), driven through
// playwright-core: where it is, whether the tests run, and how it is launched. Without Chromium the tests
// are skipped, unless CI is set (and not "0" or "false"), in which case they fail.

import { existsSync } from "node:fs";
import process from "node:process";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const IN_CI = !!process.env.CI && !/^(0|false)$/i.test(process.env.CI);
export const HAVE_CHROMIUM = existsSync(CHROMIUM_PATH);

/** The skip reason for `what` ("browser test") when Chromium is missing outside CI; otherwise false. */
export function chromiumSkipReason(what: string): string | false {
  return !HAVE_CHROMIUM && !IN_CI
    ? `Chromium not found at ${CHROMIUM_PATH}: ${what} skipped (install the "chromium" package; under CI this is a failure)`
    : false;
}

const LAUNCH_ARGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-gpu",
];

/** Headless Chromium, quiet (no background traffic, no sandbox, no GPU); `extraArgs` are added to its flags. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...LAUNCH_ARGS, ...extraArgs] });
}
