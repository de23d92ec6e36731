-- The operator's manual requests, each enabled only where it can change something.
local status = obj.status or {}
local canary_walking = status.phase == "Progressing" and status.canary ~= nil
local paused_by_request = status.pausedByRequest == true

local actions = {}
-- Once promotion has started the canary has passed; an abort would be refused.
actions["promote"] = {["disabled"] = not canary_walking}
actions["promote-step"] = {["disabled"] = not canary_walking}
actions["abort"] = {["disabled"] = not canary_walking}
actions["retry"] = {["disabled"] = status.phase ~= "RolledBack"}
-- A pause request also holds canaries started later, so it is offered in every phase.
actions["pause"] = {["disabled"] = paused_by_request}
actions["resume"] = {["disabled"] = not paused_by_request}
return actions
