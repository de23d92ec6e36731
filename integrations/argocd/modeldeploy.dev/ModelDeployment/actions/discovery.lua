-- The operator's manual requests, each enabled only where it can change something.
local status = obj.status or {}
local canary_walking = status.phase == "Progressing" and status.canary ~= nil
local paused_by_request = status.pausedByRequest == true
-- abort stops a running experiment; retry runs the spec's finished experiment again
-- while the stable serves the spec's model.
local experiment = status.experiment
local strategy = obj.spec and obj.spec.strategy
local experiment_running = status.phase == "Experimenting" and experiment ~= nil and experiment.phase == "Running"
local experiment_finished = status.phase == "Available" and status.canary == nil and experiment ~= nil
  and experiment.phase ~= "Running" and strategy ~= nil and strategy.type == "experiment"

local actions = {}
-- Once promotion has started the canary has passed; an abort would be refused.
actions["promote"] = {["disabled"] = not canary_walking}
actions["promote-step"] = {["disabled"] = not canary_walking}
actions["abort"] = {["disabled"] = not (canary_walking or experiment_running)}
actions["retry"] = {["disabled"] = not (status.phase == "RolledBack" or experiment_finished)}
-- A pause request also holds canaries started later, so it is offered in every phase.
actions["pause"] = {["disabled"] = paused_by_request}
actions["resume"] = {["disabled"] = not paused_by_request}
return actions
