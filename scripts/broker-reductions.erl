%% Where the broker's work goes during a window: the reductions (Erlang's unit of work) of
%% every process, summed by kind (initial call or registered name), and how busy each
%% scheduler was. Used for issue 18's W5 (BENCHMARKS.md). Run it before the workload:
%%
%%   rabbitmqctl eval "$(cat scripts/broker-reductions.erl)" &
%%   touch /tmp/eventrabbit-profile.go    # when the window starts
%%   touch /tmp/eventrabbit-profile.stop  # when it ends; the totals are printed
%%
%% (remove both files before the next window). Nothing is changed on the broker but the
%% scheduler_wall_time flag.
Wait = fun W(F) -> case filelib:is_file(F) of true -> ok; false -> timer:sleep(2), W(F) end end,
Kind = fun(P) -> case erlang:process_info(P, registered_name) of {registered_name, N} when is_atom(N) -> N; undefined -> dead; _ -> proc_lib:translate_initial_call(P) end end,
Snap = fun() -> maps:from_list([{P, {R, Kind(P)}} || P <- erlang:processes(), {reductions, R} <- [erlang:process_info(P, reductions)]]) end,
Wait("/tmp/eventrabbit-profile.go"),
erlang:system_flag(scheduler_wall_time, true),
S0 = erlang:statistics(scheduler_wall_time),
A = Snap(),
Wait("/tmp/eventrabbit-profile.stop"),
B = Snap(),
S1 = erlang:statistics(scheduler_wall_time),
Online = erlang:system_info(schedulers_online),
Busy = [{I, (A1 - A0) / (T1 - T0)} || {{I, A0, T0}, {I, A1, T1}} <- lists:zip(lists:sort(S0), lists:sort(S1)), I =< Online],
Sum = maps:fold(fun(P, {R1, K}, Acc) -> R0 = case maps:get(P, A, undefined) of undefined -> 0; {X, _} -> X end, maps:update_with(K, fun({S, N}) -> {S + R1 - R0, N + 1} end, {R1 - R0, 1}, Acc) end, #{}, B),
Top = lists:reverse(lists:keysort(2, [{K, S, N} || {K, {S, N}} <- maps:to_list(Sum)])),
{{scheduler_busy, Busy}, {reductions_by_kind, lists:sublist(Top, 15)}}.
