// slatrack console: the one script (no inline script: the pages' CSP forbids it).
"use strict";
