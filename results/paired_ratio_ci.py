"""Paired 95% intervals for LER ratios of an evaluate JSON: python results/paired_ratio_ci.py FILE.json

Decoders in one evaluate run decode the same shots; with one observable, the shots where two
decoders disagree are those where exactly one is wrong. From errors and disagreements this recovers
the four cells (both wrong, only the pipeline wrong, only the baseline wrong, neither) and
bootstraps them (multinomial, 2e5 resamples, numpy seed 0) for the ratio of error counts and, for
experiments of more than one round, for the ratio of LERs per round (1 - (1 - 2 LER)^(1/r)) / 2."""
import json,sys,numpy as np
def per_round(ler,rounds):
    return (1-(1-2*ler)**(1/rounds))/2
def ci(e_pipe,e_base,disagree,shots,rounds=1,n=200000,seed=0):
    a=(disagree+(e_pipe-e_base))//2; b=disagree-a; c=e_pipe-a
    assert (a-b)==e_pipe-e_base and a>=0 and b>=0 and c>=0
    p=np.array([c,a,b,shots-a-b-c])/shots
    rng=np.random.default_rng(seed); m=rng.multinomial(shots,p,size=n)
    r=(m[:,0]+m[:,1])/(m[:,0]+m[:,2])
    out=dict(only_pipeline_wrong=int(a),only_baseline_wrong=int(b),both_wrong=int(c),ratio=e_pipe/e_base,ci95=[float(x) for x in np.quantile(r,[0.025,0.975])])
    if rounds>1:
        pr=per_round((m[:,0]+m[:,1])/shots,rounds)/per_round((m[:,0]+m[:,2])/shots,rounds)
        out.update(per_round_ratio=per_round(e_pipe/shots,rounds)/per_round(e_base/shots,rounds),per_round_ci95=[float(x) for x in np.quantile(pr,[0.025,0.975])])
    return out
for f in sys.argv[1:]:
    d=json.load(open(f)); d=d[0] if isinstance(d,list) else d
    rounds=round(np.log(1-2*d['ler'])/np.log(1-2*d['ler_per_round'])) if d['ler']>0 else 1
    print(f, json.dumps({'uncorrelated':ci(d['errors'],d['baseline_errors'],d['disagreements'],d['shots'],rounds),
                         'correlated':ci(d['errors'],d['correlated_errors'],d['correlated_disagreements'],d['shots'],rounds)}))
