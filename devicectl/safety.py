"""The caps and interlocks: every clinical limit is written here, once.

Everything that commands the pen reaches these constants and checks; nothing
else in devicectl may spell a depth limit. Checks raise, they never clamp.
"""

from __future__ import annotations

from typing import Final

#: The clinical depth cap: no needle deeper than 1.5 mm, whatever asks.
DEPTH_CAP_UM: Final = 1500
#: Measured depth beyond the cap that means the pen must stop at once.
OVERDEPTH_MARGIN_UM: Final = 50
#: Measured depth beyond the commanded depth that means the pen must stop at once.
OVERSHOOT_MARGIN_UM: Final = 100
#: The absolute over-depth limit on measured depth (cap + margin).
OVERDEPTH_LIMIT_UM: Final = DEPTH_CAP_UM + OVERDEPTH_MARGIN_UM
#: The pen's depth step: profiles give depth in 0.05 mm steps.
DEPTH_STEP_UM: Final = 50
#: Zones treated deeper than this are bound by the minimum interval.
INTERVAL_DEPTH_UM: Final = 1000
#: Minimum days between sessions on a zone treated deeper than INTERVAL_DEPTH_UM.
MIN_INTERVAL_DAYS: Final = 28
